//! Looking at the disk: what is at a path, every path below a folder, and
//! whether DIR itself is there, for the engine's `Scan`. A symlink is seen
//! as a link (its target read, never followed); skips dirsync's own state
//! and temp files, special files, and names and link targets that are not
//! UTF-8. A
//! path that cannot be observed is reported as failed (unknown), never as
//! missing.
//!
//! Must not: change anything on disk.

use super::files::{io_err, is_absent, is_exec, mode_of, mtime_ns, StoreError};
use super::hashing::{hash_file, Background, Version};
use super::special::pseudo_filesystem;
use super::store::Store;
use super::xattrs::Found;
use crate::engine::{DirState, Known, Look, Observed};
use crate::wire::{Hash, Kind, RelPath, Xattrs, MAX_LINK_TARGET, STATE_DIR_NAME};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tracing::{debug, info, warn};

/// What the engine says of a path (a folder when the flag is set) before a
/// scan looks at it (see `Look`).
pub type Lookup<'a> = &'a dyn Fn(&RelPath, bool) -> Look;

/// What `Store::scan_checked` saw.
#[derive(Debug, Default)]
pub struct ScanResult {
    pub found: Vec<Observed>,
    /// Paths that could not be observed (their subtrees are unknown).
    pub failed: Vec<RelPath>,
    /// Large files queued to be hashed off the loop (unknown until then:
    /// the node looks at each again when its hash is in).
    pub hashing: Vec<RelPath>,
    /// DIR itself could not be read: nothing is known.
    pub root_failed: bool,
}

/// A look at the whole tree, folder by folder, so that what it holds in
/// memory is bounded by a part, not by the tree: a million paths used to
/// be one scan of 326 MiB.
pub struct TreeWalk {
    /// Folders still to read (`None`: the root).
    folders: Vec<(PathBuf, Option<RelPath>)>,
}

/// One part of a `TreeWalk`: whole folders, each with its direct children
/// looked at (a subfolder's own contents come in a later part).
#[derive(Debug, Default)]
pub struct TreePart {
    pub folders: Vec<Option<RelPath>>,
    pub found: Vec<Observed>,
    /// Paths that could not be observed (unknown, not gone).
    pub failed: Vec<RelPath>,
    /// Large files queued to be hashed (see `ScanResult::hashing`).
    pub hashing: Vec<RelPath>,
    /// DIR itself could not be read: nothing is known.
    pub root_failed: bool,
    /// Nothing is left to look at.
    pub last: bool,
}

impl TreeWalk {
    /// The next part: whole folders, until `size` paths were found.
    pub fn next_part(&mut self, store: &Store, size: usize, known: Lookup<'_>) -> TreePart {
        let mut part = TreePart::default();
        while let Some((dir, rel_dir)) = self.folders.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                // Gone meanwhile: the next look at its parent tells.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot read directory; what it holds is left as it was");
                    match rel_dir {
                        Some(r) => part.failed.push(r),
                        None => {
                            part.root_failed = true;
                            self.folders.clear();
                        }
                    }
                    continue;
                }
            };
            for de in entries.flatten() {
                let full = de.path();
                match store.look_at(&full, known) {
                    Some((rel, Ok(Some(mut o)))) => {
                        if o.kind == Kind::Dir {
                            o.occupied = fs::read_dir(&full).is_ok_and(|mut d| d.next().is_some());
                            self.folders.push((full, Some(rel)));
                        }
                        part.found.push(o);
                    }
                    Some((_, Ok(None))) | None => {}
                    Some((rel, Err(e))) => not_observed(rel, e, &mut part.failed, &mut part.hashing),
                }
            }
            part.folders.push(rel_dir);
            if part.found.len() >= size {
                break;
            }
        }
        part.last = self.folders.is_empty();
        part
    }
}

/// Where a path that could not be observed goes: nowhere if it is gone
/// meanwhile, `hashing` if it is a large file queued to be hashed, else
/// `failed` (unknown, looked at again later).
fn not_observed(rel: RelPath, e: StoreError, failed: &mut Vec<RelPath>, hashing: &mut Vec<RelPath>) {
    match e {
        // Gone, or a folder on its way is a file now: not there.
        StoreError::Io { source, .. } if is_absent(&source) => {}
        StoreError::Hashing(_) => hashing.push(rel),
        e => {
            debug!(path = %rel, error = %e, "not scanned; trying again later");
            failed.push(rel);
        }
    }
}

/// A scan in progress.
#[derive(Default)]
struct Walk {
    found: Vec<Observed>,
    failed: Vec<RelPath>,
    hashing: Vec<RelPath>,
    /// Folders still to read, with their relative path (`None`: the root)
    /// and where `found` holds them.
    folders: Vec<(PathBuf, Option<RelPath>, Option<usize>)>,
}

impl Walk {
    /// What was seen at `rel` (`full` on disk).
    fn add(&mut self, rel: RelPath, full: PathBuf, observed: Result<Option<Observed>, StoreError>) {
        match observed {
            Ok(Some(o)) => {
                if o.kind == Kind::Dir {
                    self.folders.push((full, Some(rel), Some(self.found.len())));
                }
                self.found.push(o);
            }
            Ok(None) => {}
            Err(e) => not_observed(rel, e, &mut self.failed, &mut self.hashing),
        }
    }
}

impl Store {
    /// What is at `rel` now, hashing only when size or mtime differ from
    /// `known` (the index entry, or for a rename the source's entry).
    pub fn observe(&self, rel: &RelPath, known: Option<&Known>) -> Result<Option<Observed>, StoreError> {
        let full = self.full_path(rel)?;
        let meta = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(io_err(&full)(e)),
        };
        self.observe_meta(rel, &full, &meta, known)
    }

    fn observe_meta(&self, rel: &RelPath, full: &Path, meta: &Metadata, known: Option<&Known>) -> Result<Option<Observed>, StoreError> {
        let ft = meta.file_type();
        let mode = if self.perms { mode_of(meta) } else { 0 };
        let xattrs = || self.observe_xattrs(rel, full);
        if ft.is_dir() {
            return Ok(Some(Observed {
                path: rel.clone(),
                kind: Kind::Dir,
                size: 0,
                mtime: 0,
                hash: Hash::ZERO,
                occupied: false,
                exec: false,
                mode,
                target: None,
                xattrs: xattrs()?,
                stat: None,
            }));
        }
        if ft.is_symlink() {
            return self.observe_link(rel, full, meta);
        }
        if !ft.is_file() {
            if self.warned.first(full) {
                info!(path = %rel, "not synced: a special file (FIFO, socket or device)");
            }
            return Ok(None);
        }
        let version = Version::of(meta);
        let Version { size, mtime, stat } = version;
        // Unchanged when size and mtime match and, where this node looked
        // at the file before, its inode and change time too.
        let hash = match known {
            Some((k, seen))
                if !k.deleted && k.kind == Kind::File && k.size == size && k.mtime == mtime && seen.is_none_or(|s| s == stat) =>
            {
                k.hash
            }
            _ if size > self.inline_hash_max => match self.background.lookup(rel, full, version) {
                Background::Hashed(hash) => hash,
                Background::Pending => return Err(StoreError::Hashing(rel.to_string())),
            },
            _ => {
                self.files_hashed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (hash, len) = hash_file(full, size).map_err(io_err(full))?;
                if len != size {
                    // Written while we read it: the next event will catch up.
                    return Err(StoreError::Changed(rel.to_string()));
                }
                hash
            }
        };
        Ok(Some(Observed {
            path: rel.clone(),
            kind: Kind::File,
            size,
            mtime,
            hash,
            occupied: false,
            exec: is_exec(meta),
            mode,
            target: None,
            xattrs: xattrs()?,
            stat: Some(stat),
        }))
    }

    /// The `user.` extended attributes of a file or folder, where this
    /// node carries them (`--xattrs`); more than can be carried is unknown.
    fn observe_xattrs(&self, rel: &RelPath, full: &Path) -> Result<Option<Xattrs>, StoreError> {
        if !self.xattrs {
            return Ok(None);
        }
        match super::xattrs::read(full).map_err(io_err(full))? {
            Found::Carried(x) => Ok(Some(x)),
            Found::TooMany => {
                if self.warned.first(full) {
                    info!(path = %rel, "extended attributes not synced: more than 4 KiB of them");
                }
                Ok(None)
            }
        }
    }

    /// A symlink: its target as it is written, never what it points to.
    /// A target that is not UTF-8 (or too long to carry) is not synced.
    fn observe_link(&self, rel: &RelPath, full: &Path, meta: &Metadata) -> Result<Option<Observed>, StoreError> {
        let target = fs::read_link(full).map_err(io_err(full))?;
        let Some(target) = target.to_str().filter(|t| !t.is_empty() && t.len() <= MAX_LINK_TARGET) else {
            if self.warned.first(full) {
                info!(path = %rel, "not synced: a symlink whose target is not UTF-8");
            }
            return Ok(None);
        };
        Ok(Some(Observed {
            path: rel.clone(),
            kind: Kind::Symlink,
            size: target.len() as u64,
            mtime: mtime_ns(meta),
            hash: Hash::of(target.as_bytes()),
            occupied: false,
            exec: false,
            mode: 0,
            target: Some(target.to_string()),
            xattrs: None,
            stat: None,
        }))
    }

    /// Everything at and below `root` (`None`: the whole tree). `known`
    /// gives the index entry for a path, to skip hashing unchanged files.
    /// Unreadable paths are logged and left out.
    #[cfg(test)]
    pub fn scan(&self, root: Option<&RelPath>, known: Lookup<'_>) -> Vec<Observed> {
        self.scan_checked(root, known).found
    }

    /// Like `scan`, and also the paths that could not be observed: a file
    /// whose size changed while it was hashed (still being written), an
    /// unreadable file or folder. Such a path (and for a folder, all below
    /// it) is unknown, not gone: it must not become a deletion.
    pub fn scan_checked(&self, root: Option<&RelPath>, known: Lookup<'_>) -> ScanResult {
        let mut walk = Walk::default();
        match root {
            Some(r) => {
                let full = r.to_fs(&self.root);
                if let Some(observed) = self.look_at_path(r, &full, known) {
                    walk.add(r.clone(), full, observed);
                }
            }
            None => walk.folders.push((self.root.clone(), None, None)),
        }
        while let Some((dir, rel_dir, at)) = walk.folders.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // gone meanwhile
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot read directory; what it holds is left as it was");
                    match rel_dir {
                        Some(r) => walk.failed.push(r),
                        // The root itself: everything is unknown.
                        None => {
                            return ScanResult {
                                failed: walk.failed,
                                root_failed: true,
                                ..ScanResult::default()
                            }
                        }
                    }
                    continue;
                }
            };
            for de in entries.flatten() {
                if let Some(o) = at.and_then(|i| walk.found.get_mut(i)) {
                    o.occupied = true;
                }
                let full = de.path();
                if let Some((rel, observed)) = self.look_at(&full, known) {
                    walk.add(rel, full, observed);
                }
            }
        }
        ScanResult {
            found: walk.found,
            failed: walk.failed,
            hashing: walk.hashing,
            root_failed: false,
        }
    }

    /// What is at `full`, a path found in a folder: `None` for what is
    /// never synced (dirsync's own, names that are not paths).
    fn look_at(&self, full: &Path, known: Lookup<'_>) -> Option<(RelPath, Result<Option<Observed>, StoreError>)> {
        if self.skip(full) {
            return None;
        }
        let rel = match RelPath::from_fs(&self.root, full) {
            Ok(r) => r,
            Err(e) => {
                if self.warned.first(full) {
                    warn!(path = %full.display(), error = %e, "not synced: unsupported name");
                }
                return None;
            }
        };
        let observed = self.look_at_path(&rel, full, known)?;
        Some((rel, observed))
    }

    /// What is at `rel` (`full` on disk): `None` for a path not synced
    /// here (ignored or excluded: neither looked at nor hashed, nor
    /// anything below it).
    fn look_at_path(&self, rel: &RelPath, full: &Path, known: Lookup<'_>) -> Option<Result<Option<Observed>, StoreError>> {
        let meta = match fs::symlink_metadata(full) {
            Ok(meta) => meta,
            Err(e) => return Some(Err(io_err(full)(e))),
        };
        if meta.is_dir() && Some(meta.dev()) != self.root_device {
            if let Some(kind) = pseudo_filesystem(full) {
                // Never read: its files are the kernel's, and some block
                // on read. Not synced, like an excluded path; a folder the
                // index holds there is unknown, not gone.
                if self.warned.first(full) {
                    warn!(path = %rel, filesystem = kind, "not synced: a mount of a kernel pseudo filesystem");
                }
                return match known(rel, true) {
                    Look::At(Some(_)) => Some(Err(StoreError::Pseudo(rel.to_string(), kind))),
                    _ => None,
                };
            }
        }
        match known(rel, meta.is_dir()) {
            Look::Skip => None,
            Look::At(k) => Some(self.observe_meta(rel, full, &meta, k.as_ref())),
        }
    }

    /// A look at the whole tree in parts (`TreeWalk::next_part`).
    pub fn walk_tree(&self) -> TreeWalk {
        TreeWalk {
            folders: vec![(self.root.clone(), None)],
        }
    }

    /// What DIR itself holds, for the mass-delete guard: `Missing` if it
    /// cannot be read as a directory, `Empty` if it holds nothing synced
    /// (dirsync's state folder and temp files do not count).
    pub fn dir_state(&self) -> DirState {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return DirState::Missing("it is not a directory".into()),
            Err(e) => return DirState::Missing(format!("it cannot be read: {e}")),
        }
        if let Err(e) = fs::read_dir(&self.root) {
            return DirState::Missing(format!("it cannot be read: {e}"));
        }
        match fs::metadata(self.marker()) {
            Ok(m) if m.is_dir() => DirState::Present,
            _ => DirState::Missing(format!("its marker folder {STATE_DIR_NAME} is missing")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::testing::{entry_for, rel, setup};

    #[test]
    fn scan_skips_state_and_temp_and_sees_links_as_links() {
        let (dir, store) = setup();
        let root = dir.path();
        fs::create_dir_all(root.join(".dirsync")).unwrap();
        fs::write(root.join(".dirsync/index"), b"x").unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f.txt"), b"hello").unwrap();
        let ours = crate::wire::temp_name("00000000000000d1", 3);
        let theirs = crate::wire::temp_name("00000000000000d2", 3);
        fs::write(root.join("a").join(&ours), b"partial").unwrap();
        fs::write(root.join("a").join(&theirs), b"partial").unwrap();
        // A user's file that only looks like a temp file (issue 13, bug 3).
        fs::write(root.join("a/.dirsync-tmp-notes.txt"), b"mine").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let mut got: Vec<_> = store
            .scan(None, &|_, _| Look::At(None))
            .into_iter()
            .map(|o| (o.path.to_string(), o.kind))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("a".into(), Kind::Dir),
                ("a/.dirsync-tmp-notes.txt".to_string(), Kind::File),
                ("a/b".into(), Kind::Dir),
                ("a/b/f.txt".to_string(), Kind::File),
                ("link".into(), Kind::Symlink),
            ]
        );
        // The link's target, not what it points to (/etc is a folder).
        let link = store.observe(&rel("link"), None).unwrap().unwrap();
        assert_eq!((link.target.as_deref(), link.size, link.hash), (Some("/etc"), 4, Hash::of(b"/etc")));
        // Only our own temp files go.
        assert_eq!(store.clean_temp_files(), 1);
        assert!(!root.join("a").join(&ours).exists());
        assert!(root.join("a").join(&theirs).exists());
        assert!(root.join("a/.dirsync-tmp-notes.txt").exists());
        assert!(root.join(".dirsync/index").exists());
    }

    /// What the engine says is not synced here (ignored, excluded) is
    /// neither reported nor hashed, nor anything below it, in a scan from
    /// the root, from a folder, or in parts.
    #[test]
    fn paths_not_synced_here_are_not_looked_at() {
        let (dir, store) = setup();
        let root = dir.path();
        fs::create_dir_all(root.join("videos/deep")).unwrap();
        fs::write(root.join("videos/deep/film.bin"), b"film").unwrap();
        fs::write(root.join("disk.iso"), b"iso").unwrap();
        fs::write(root.join("keep.txt"), b"keep").unwrap();
        let skip = |p: &RelPath, is_dir: bool| {
            if (p.as_str() == "videos" && is_dir) || p.as_str().ends_with(".iso") {
                Look::Skip
            } else {
                Look::At(None)
            }
        };
        let names = |found: Vec<Observed>| found.into_iter().map(|o| o.path.to_string()).collect::<Vec<_>>();
        assert_eq!(names(store.scan(None, &skip)), vec!["keep.txt"]);
        assert_eq!(names(store.scan(Some(&rel("videos")), &skip)), Vec::<String>::new());
        assert_eq!(names(store.walk_tree().next_part(&store, 100, &skip).found), vec!["keep.txt"]);
        assert_eq!(store.files_hashed(), 2, "keep.txt only, once per look from the root");
    }

    /// The whole tree, folder by folder: every folder in exactly one part,
    /// the parts together what one scan finds, each part bounded (a part
    /// closes once it holds `size` paths).
    #[test]
    fn a_walk_in_parts_sees_what_one_scan_sees_folder_by_folder() {
        let (dir, store) = setup();
        for d in 0..5 {
            for f in 0..4 {
                fs::create_dir_all(dir.path().join(format!("d{d}/s"))).unwrap();
                fs::write(dir.path().join(format!("d{d}/f{f}")), b"x").unwrap();
            }
        }
        fs::write(dir.path().join("d2/s/deep"), b"y").unwrap();
        let mut whole: Vec<Observed> = store.scan_checked(None, &|_, _| Look::At(None)).found;
        let mut walk = store.walk_tree();
        let (mut found, mut folders, mut parts) = (Vec::new(), Vec::new(), 0);
        loop {
            let part = walk.next_part(&store, 3, &|_, _| Look::At(None));
            assert!(part.found.len() < 3 + 6, "one folder's worth past the size at most");
            parts += 1;
            found.extend(part.found);
            folders.extend(part.folders);
            if part.last {
                break;
            }
        }
        let by_path = |a: &Observed, b: &Observed| a.path.cmp(&b.path);
        whole.sort_by(by_path);
        found.sort_by(by_path);
        assert_eq!(found, whole);
        folders.sort();
        let mut expected = vec![None];
        for d in 0..5 {
            expected.push(Some(rel(&format!("d{d}"))));
            expected.push(Some(rel(&format!("d{d}/s"))));
        }
        expected.sort();
        assert_eq!(folders, expected);
        assert!(parts > 3);
    }

    #[test]
    fn unreadable_paths_are_failed_not_missing() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, store) = setup();
        fs::create_dir_all(dir.path().join("locked")).unwrap();
        fs::write(dir.path().join("locked/f"), b"x").unwrap();
        fs::write(dir.path().join("ok"), b"y").unwrap();
        fs::set_permissions(dir.path().join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        let readable = fs::read_dir(dir.path().join("locked")).is_ok(); // root ignores modes
        let r = store.scan_checked(None, &|_, _| Look::At(None));
        let (found, failed) = (r.found, r.failed);
        fs::set_permissions(dir.path().join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
        let names: Vec<_> = found.iter().map(|o| o.path.as_str()).collect();
        if readable {
            assert_eq!(failed, Vec::<RelPath>::new());
        } else {
            assert_eq!(failed, vec![rel("locked")]);
            assert!(names.contains(&"ok") && names.contains(&"locked"), "{names:?}");
            assert!(!names.contains(&"locked/f"));
        }
    }

    #[test]
    fn dir_state_needs_the_directory_and_its_marker() {
        let (dir, store) = setup();
        fs::write(dir.path().join("f"), b"").unwrap();
        assert!(matches!(store.dir_state(), DirState::Missing(why) if why.contains("marker")));
        fs::create_dir_all(dir.path().join(".dirsync")).unwrap();
        assert_eq!(store.dir_state(), DirState::Present);
        fs::remove_file(dir.path().join("f")).unwrap();
        assert_eq!(store.dir_state(), DirState::Present, "empty with its marker: present");
        let gone = Store::new(dir.path().join("nope"), dir.path().join("nope/.dirsync"), crate::wire::NodeId(0xd1));
        assert!(matches!(gone.dir_state(), DirState::Missing(_)));
    }

    #[test]
    fn observe_reuses_the_known_hash() {
        let (dir, store) = setup();
        fs::write(dir.path().join("f"), b"abc").unwrap();
        let mut known = entry_for(&store, "f");
        known.hash = Hash::of(b"pretend");
        // Same size and mtime: the file is not read again.
        let seen = store.observe(&rel("f"), Some(&(known.clone(), None))).unwrap().unwrap();
        assert_eq!(seen.hash, Hash::of(b"pretend"));
        // The same inode and change time: not read again either.
        let same = (known.clone(), seen.stat);
        assert_eq!(store.observe(&rel("f"), Some(&same)).unwrap().unwrap().hash, Hash::of(b"pretend"));
        assert_eq!(store.observe(&rel("f"), None).unwrap().unwrap().hash, Hash::of(b"abc"));
        // Rewritten with size and mtime put back: a new change time, read.
        let mtime = fs::metadata(dir.path().join("f")).unwrap().modified().unwrap();
        fs::write(dir.path().join("f"), b"xyz").unwrap();
        filetime::set_file_mtime(dir.path().join("f"), filetime::FileTime::from_system_time(mtime)).unwrap();
        assert_eq!(store.observe(&rel("f"), Some(&same)).unwrap().unwrap().hash, Hash::of(b"xyz"));
        assert_eq!(store.observe(&rel("missing"), None).unwrap(), None);
    }

    /// A file over the inline limit is not read by the look: it is queued,
    /// reported as being hashed (unknown, neither found nor failed), and
    /// found with its hash once the job ran, in a scan and a walk alike.
    #[test]
    fn a_large_file_is_hashed_off_the_look_then_found() {
        let (dir, store) = setup();
        let store = store.with_inline_hash_max(10);
        fs::write(dir.path().join("small"), b"0123456789").unwrap();
        fs::write(dir.path().join("large"), b"0123456789a").unwrap();
        let r = store.scan_checked(None, &|_, _| Look::At(None));
        let names: Vec<_> = r.found.iter().map(|o| o.path.as_str()).collect();
        assert_eq!((names, r.failed, r.hashing), (vec!["small"], vec![], vec![rel("large")]));
        assert_eq!(store.files_hashed(), 1);
        // Looked at again before the hash is in: still queued once.
        assert_eq!(
            store.walk_tree().next_part(&store, 100, &|_, _| Look::At(None)).hashing,
            vec![rel("large")]
        );
        let job = store.next_hash_job().unwrap();
        assert!(store.next_hash_job().is_none());
        let before = store.files_hashed();
        store.finish_hash(job.run()).unwrap();
        assert_eq!(store.files_hashed(), before + 1);
        let seen = store.observe(&rel("large"), None).unwrap().unwrap();
        assert_eq!(seen.hash, Hash::of(b"0123456789a"));
    }
}
