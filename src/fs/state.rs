//! The state directory: the directory's persistent device id, opening the
//! index database with its recovery (a corrupt index is moved aside and
//! rebuilt from a scan) and its migration from the index file of earlier
//! versions, reading `.dirsyncignore`, and making the state directory
//! again when it was removed under a running node (`restore_state_dir`).
//!
//! Owns: every file in `<state dir>` but the control socket. Must not:
//! decide anything about sync.

use crate::engine::ignore::{IgnoreRules, EXCLUDE_FILE, IGNORE_FILE};
use crate::engine::index::{Index, IndexError};
use crate::fs::index_db::open_index;
use crate::wire::{Entry, NodeId};
use flate2::read::ZlibDecoder;
use serde::Deserialize;
use std::io::Read;
use std::path::Path;
use tracing::warn;

/// The directory's persistent device id (for version vectors).
pub const DEVICE_FILE: &str = "device";
/// The index file of earlier versions (zlib JSON), taken over on the first
/// start of this one.
const LEGACY_INDEX_FILE: &str = "index";
/// Its last format. Format 1 (before version vectors) still loads: its
/// entries get empty vectors (history unknown).
const LEGACY_INDEX_FORMAT: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("index file {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("exclusion rules {path}: {reason}")]
    Exclusion { path: String, reason: String },
    #[error(transparent)]
    Index(#[from] IndexError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Check the state directory can be created and written.
pub fn prepare_state_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").map_err(io_err(dir))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Make DIR's marker folder (`DIR/.dirsync`, which proves DIR is the
/// directory synced, see `Store::dir_state`) at start when it is missing,
/// unless DIR is empty while the index held files: that is what an
/// unmounted disk looks like, and the node then waits instead.
pub fn ensure_marker(marker: &Path, index_had_files: bool) -> Result<(), StateError> {
    if marker.is_dir() {
        return Ok(());
    }
    let dir = marker.parent().unwrap_or(marker);
    let dir_empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    if index_had_files && dir_empty {
        warn!(dir = %dir.display(), "the directory is empty and has no .dirsync folder, but the index held files: not syncing until it is back (mkdir it if this is right)");
        return Ok(());
    }
    std::fs::create_dir_all(marker).map_err(io_err(marker))
}

/// The device id in `state_dir/device`, if it holds a valid one (read
/// only: for commands that look at DIR without running a node).
pub fn read_device_id(state_dir: &Path) -> Option<NodeId> {
    let text = std::fs::read_to_string(state_dir.join(DEVICE_FILE)).ok()?;
    let id = u64::from_str_radix(text.trim(), 16).ok()?;
    (text.trim().len() == 16 && id != 0).then_some(NodeId(id))
}

/// The synced directory's device id: read from `state_dir/device`, or, on
/// the first start (or if that file is unreadable), `fresh` written there.
/// Unlike the node id, which is new on every start, it stays with the
/// directory's state, so the counters of version vectors stay its own.
pub fn load_device_id(state_dir: &Path, fresh: NodeId) -> Result<NodeId, StateError> {
    let path = state_dir.join(DEVICE_FILE);
    if let Some(id) = read_device_id(state_dir) {
        return Ok(id);
    }
    if path.exists() {
        warn!(path = %path.display(), "the device id file is unreadable; making a new device id");
    }
    let id = if fresh.0 == 0 { NodeId(1) } else { fresh };
    write_durably(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// Write `bytes` to `path` through a temp file beside it, fsynced and
/// renamed over.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        std::io::Write::write_all(&mut f, bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// What a running node keeps in its state directory and can write again.
pub struct Kept<'a> {
    pub device: NodeId,
    /// The text of the exclusion rules in use (empty: none).
    pub exclusion: &'a [u8],
}

/// Make the state directory again after it was removed under the running
/// node (the index's file is no longer at its path): the folder (0700:
/// made now, it is ours), the index written whole to a new file, the
/// device id, and the exclusion rules in use (unless an exclude file is
/// there: the user's). The control socket is the control thread's to make
/// again; the trash lives in `DIR/.dirsync`, not here (and what it held
/// went with it). The caller decides whether the
/// folder may be made: not when it is DIR's marker (see `node::disk`).
pub fn restore_state_dir(dir: &Path, index: &mut Index, kept: &Kept) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    index.rewrite()?;
    write_durably(&dir.join(DEVICE_FILE), format!("{}\n", kept.device).as_bytes())?;
    let exclude = dir.join(EXCLUDE_FILE);
    if !kept.exclusion.is_empty() && !exclude.exists() {
        write_durably(&exclude, kept.exclusion)?;
    }
    Ok(())
}

/// The index database in the state directory.
pub const INDEX_DB: &str = "index.redb";

/// The index as loaded at start.
pub struct LoadedIndex {
    pub index: Index,
    /// The index held this directory's history (false on a first start,
    /// or after an unreadable index was moved aside and rebuilt).
    pub history_known: bool,
    /// An index existed but could not be read: it was moved aside.
    pub rebuilt: bool,
}

/// Open the index database in `state_dir`. A first start creates it,
/// taking over the entries of an index file of an earlier version
/// (`index`, zlib JSON) when there is one; an unreadable database is
/// moved aside to `index.redb.corrupt` and rebuilt from the first scan,
/// with a warning.
pub fn load_index(state_dir: &Path) -> Result<LoadedIndex, StateError> {
    let path = state_dir.join(INDEX_DB);
    let corrupt_err = |reason: String| StateError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let (mut index, existed, rebuilt) = match open_index(&path) {
        Ok((index, existed)) => (index, existed, false),
        Err(e) if path.exists() => {
            let aside = path.with_extension("redb.corrupt");
            std::fs::rename(&path, &aside).map_err(io_err(&path))?;
            warn!(error = %e, kept_as = %aside.display(), "rebuilding the index from a scan");
            let (index, _) = open_index(&path).map_err(|e| corrupt_err(e.to_string()))?;
            (index, false, true)
        }
        Err(e) => return Err(corrupt_err(e.to_string())),
    };
    if existed {
        return Ok(LoadedIndex {
            index,
            history_known: true,
            rebuilt,
        });
    }
    let legacy = state_dir.join(LEGACY_INDEX_FILE);
    if !legacy.exists() {
        return Ok(LoadedIndex {
            index,
            history_known: false,
            rebuilt,
        });
    }
    match read_index(&legacy) {
        Ok(entries) => {
            for e in entries {
                index.insert(e);
            }
            index.commit().map_err(|e| corrupt_err(e.to_string()))?;
            let _ = std::fs::rename(&legacy, legacy.with_extension("imported"));
            Ok(LoadedIndex {
                index,
                history_known: true,
                rebuilt,
            })
        }
        Err(e) => {
            let aside = legacy.with_extension("corrupt");
            let _ = std::fs::rename(&legacy, &aside);
            warn!(error = %e, kept_as = %aside.display(), "rebuilding the index from a scan");
            Ok(LoadedIndex {
                index,
                history_known: false,
                rebuilt: true,
            })
        }
    }
}

#[derive(Deserialize)]
struct IndexFile {
    format: u32,
    entries: Vec<Entry>,
}

/// Read an index file of an earlier version (zlib JSON).
fn read_index(path: &Path) -> Result<Vec<Entry>, StateError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let mut json = Vec::new();
    ZlibDecoder::new(&bytes[..])
        .read_to_end(&mut json)
        .map_err(|e| corrupt(e.to_string()))?;
    let file: IndexFile = serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))?;
    if file.format != LEGACY_INDEX_FORMAT && file.format != 1 {
        return Err(corrupt(format!("unknown format {}", file.format)));
    }
    Ok(file.entries)
}

/// Read this host's exclusion rules, `state_dir/exclude` (missing: none).
pub fn read_exclusion_rules(state_dir: &Path) -> Result<Vec<u8>, StateError> {
    let path = state_dir.join(EXCLUDE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StateError::Exclusion {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Read `root/.dirsyncignore` (missing or unreadable: no rules, and the
/// reason for an unreadable one).
pub fn load_ignore_rules(root: &Path) -> (IgnoreRules, Vec<String>) {
    match std::fs::read(root.join(IGNORE_FILE)) {
        Ok(bytes) => IgnoreRules::from_bytes(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (IgnoreRules::default(), Vec::new()),
        Err(e) => (IgnoreRules::default(), vec![format!("{IGNORE_FILE}: {e}")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::{file, tomb};
    use crate::wire::{Hash, RelPath};
    use flate2::{write::ZlibEncoder, Compression};
    use std::io::Write;

    #[test]
    fn the_device_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_device_id(dir.path(), NodeId(0xabc)).unwrap();
        assert_eq!(first, NodeId(0xabc));
        // Later starts (with new node ids) keep it.
        assert_eq!(load_device_id(dir.path(), NodeId(0xdef)).unwrap(), first);
        // An unreadable file gives a new one, written for next time.
        std::fs::write(dir.path().join(DEVICE_FILE), b"junk").unwrap();
        assert_eq!(load_device_id(dir.path(), NodeId(0x123)).unwrap(), NodeId(0x123));
        assert_eq!(load_device_id(dir.path(), NodeId(0x456)).unwrap(), NodeId(0x123));
    }

    fn legacy_index(dir: &Path, json: &[u8]) {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
        z.write_all(json).unwrap();
        std::fs::write(dir.join(LEGACY_INDEX_FILE), z.finish().unwrap()).unwrap();
    }

    #[test]
    fn the_index_survives_a_restart_and_a_corrupt_one_is_moved_aside_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load_index(dir.path()).unwrap();
        assert!(
            loaded.index.is_empty() && !loaded.history_known && !loaded.rebuilt,
            "a first start: unknown history"
        );
        let mut index = loaded.index;
        index.insert(file("a/b", 7, b"x"));
        index.insert(tomb("gone", 9));
        index.commit().unwrap();
        let crashed = index.identity();
        drop(index);
        let mut back = load_index(dir.path()).unwrap();
        assert!(back.history_known && !back.rebuilt);
        let identity = back.index.identity();
        assert_ne!(
            identity, crashed,
            "not closed: a new identity (its last numbers may be given out again)"
        );
        back.index.close().unwrap();
        drop(back);
        let back = load_index(dir.path()).unwrap();
        assert_eq!(
            back.index.identity(),
            identity,
            "closed cleanly: the identity stays with the state directory"
        );
        let entries: Vec<Entry> = back.index.iter().collect();
        assert_eq!(entries, [file("a/b", 7, b"x"), tomb("gone", 9)]);
        drop(back);
        let path = dir.path().join(INDEX_DB);
        std::fs::write(&path, b"not a database").unwrap();
        let rebuilt = load_index(dir.path()).unwrap();
        assert!(rebuilt.index.is_empty() && !rebuilt.history_known && rebuilt.rebuilt);
        assert_ne!(rebuilt.index.identity(), identity, "a rebuilt index is a new identity");
        assert_eq!(std::fs::read(path.with_extension("redb.corrupt")).unwrap(), b"not a database");
    }

    /// The folder sums are kept with the rules they were made under: a
    /// restart with the same rules reuses them, other rules recount them.
    #[test]
    fn the_digest_survives_a_restart_under_the_same_rules_and_follows_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let rules = |text: &str| IgnoreRules::from_bytes(text.as_bytes()).0;
        let mut index = load_index(dir.path()).unwrap().index;
        index.set_ignore(rules("*.log\n"));
        index.insert(file("a/keep.txt", 1, b"k"));
        index.insert(file("a/x.log", 1, b"l"));
        let digest = index.dir_sum("").digest();
        index.close().unwrap();
        drop(index);
        let mut index = load_index(dir.path()).unwrap().index;
        index.set_ignore(rules("*.log\n"));
        assert_eq!(index.dir_sum("").digest(), digest);
        assert_eq!(index.dir_sum("a").files, 1, "x.log left out");
        index.set_ignore(IgnoreRules::default());
        assert_eq!(index.dir_sum("a").files, 2, "counted again under no rules");
        assert_ne!(index.dir_sum("").digest(), digest);
        index.set_ignore(rules("*.log\n"));
        assert_eq!(index.dir_sum("").digest(), digest);
    }

    #[test]
    fn an_index_file_of_an_earlier_version_is_taken_over_with_unknown_histories_for_format_1() {
        let dir = tempfile::tempdir().unwrap();
        // What dirsync wrote before version vectors.
        legacy_index(dir.path(), br#"{"format":1,"entries":[{"path":"a","kind":"file","size":1,"mtime":7,"version":7,"hash":"0000000000000000000000000000000000000000000000000000000000000000"}]}"#);
        let loaded = load_index(dir.path()).unwrap();
        assert!(loaded.history_known);
        let a = loaded.index.get(&RelPath::new("a").unwrap()).unwrap();
        assert!(a.vector.is_empty());
        assert_eq!((a.size, a.version, a.by), (1, 7, NodeId(0)));
        assert!(dir.path().join("index.imported").exists());
        let other = tempfile::tempdir().unwrap();
        legacy_index(other.path(), b"{\"format\":99,\"entries\":[]}");
        let loaded = load_index(other.path()).unwrap();
        assert!(loaded.rebuilt && !loaded.history_known && loaded.index.is_empty());
    }

    /// A state directory removed under a running node: the index, whose
    /// file is only held open now, is written whole to a new file, with
    /// its pending changes and its identity, next to the device id and
    /// the exclusion rules in use.
    #[test]
    fn a_removed_state_directory_is_made_again_with_the_whole_index() {
        use crate::engine::index::OnDisk;
        let scratch = tempfile::tempdir().unwrap();
        let state = scratch.path().join("state");
        prepare_state_dir(&state).unwrap();
        let mut index = load_index(&state).unwrap().index;
        index.insert(file("a/b", 7, b"x"));
        index.commit().unwrap();
        index.insert(tomb("gone", 9));
        assert_eq!(index.on_disk().unwrap(), OnDisk::InPlace);
        let moved = scratch.path().join("moved");
        std::fs::rename(&state, &moved).unwrap();
        assert_eq!(index.on_disk().unwrap(), OnDisk::Moved, "still linked, elsewhere");
        std::fs::remove_dir_all(&moved).unwrap();
        assert_eq!(index.on_disk().unwrap(), OnDisk::Unlinked);
        let kept = Kept {
            device: NodeId(0x77),
            exclusion: b"big/\n",
        };
        restore_state_dir(&state, &mut index, &kept).unwrap();
        assert_eq!(index.on_disk().unwrap(), OnDisk::InPlace);
        assert_eq!(read_device_id(&state), Some(NodeId(0x77)));
        assert_eq!(read_exclusion_rules(&state).unwrap(), b"big/\n");
        // It goes on saving into the new file.
        index.insert(file("later", 11, b"y"));
        index.close().unwrap();
        let identity = index.identity();
        drop(index);
        let back = load_index(&state).unwrap();
        assert!(back.history_known && !back.rebuilt);
        assert_eq!(back.index.identity(), identity, "the same index, closed cleanly");
        let entries: Vec<Entry> = back.index.iter().collect();
        assert_eq!(entries, [file("a/b", 7, b"x"), tomb("gone", 9), file("later", 11, b"y")]);
        assert!(!state.join("index.redb.new").exists());
    }

    #[test]
    fn no_ignore_file_ignores_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (r, errors) = load_ignore_rules(d.path());
        assert!(errors.is_empty());
        assert_eq!(r.source(), None);
        let p = RelPath::new("a.log").unwrap();
        assert!(!r.is_ignored(&p, false));
        std::fs::write(d.path().join(IGNORE_FILE), "*.log\n").unwrap();
        let (r, _) = load_ignore_rules(d.path());
        assert_eq!(r.source(), Some(Hash::of(b"*.log\n")));
        assert!(r.is_ignored(&p, false));
    }
}
