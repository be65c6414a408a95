//! The state directory: the directory's persistent device id, the index
//! file (zlib JSON, written atomically) with its recovery (a corrupt index
//! is moved aside and rebuilt from a scan), and reading `.dirsyncignore`.
//!
//! Owns: every file in `<state dir>` but the control socket, and the index
//! file's format. Must not: decide anything about sync.

use crate::engine::ignore::{IgnoreRules, IGNORE_FILE};
use crate::engine::index::Index;
use crate::wire::{Entry, NodeId};
use flate2::{read::ZlibDecoder, write::ZlibEncoder, Compression};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;
use tracing::warn;

/// The directory's persistent device id (for version vectors).
pub const DEVICE_FILE: &str = "device";
/// The index file's name in the state directory.
pub const INDEX_FILE: &str = "index";
/// Version of the index file format. Format 1 (before version vectors)
/// still loads: its entries get empty vectors (history unknown).
const INDEX_FORMAT: u32 = 2;

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

/// The synced directory's device id: read from `state_dir/device`, or, on
/// the first start (or if that file is unreadable), `fresh` written there.
/// Unlike the node id, which is new on every start, it stays with the
/// directory's state, so the counters of version vectors stay its own.
pub fn load_device_id(state_dir: &Path, fresh: NodeId) -> Result<NodeId, StateError> {
    let path = state_dir.join(DEVICE_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        match u64::from_str_radix(text.trim(), 16) {
            Ok(id) if text.trim().len() == 16 && id != 0 => return Ok(NodeId(id)),
            _ => warn!(path = %path.display(), "the device id file is unreadable; making a new device id"),
        }
    }
    let id = if fresh.0 == 0 { NodeId(1) } else { fresh };
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(id)
}

/// The index in `path`, and whether its history is known: a missing index
/// (first start) or an unreadable one (moved aside to `index.corrupt`) is
/// rebuilt from the first scan, with a warning for the unreadable one.
pub fn load_index(path: &Path) -> (Index, bool) {
    if !path.exists() {
        return (Index::default(), false);
    }
    match read_index(path) {
        Ok(i) => (i, true),
        Err(e) => {
            let aside = path.with_extension("corrupt");
            let _ = std::fs::rename(path, &aside);
            warn!(error = %e, kept_as = %aside.display(), "rebuilding the index from a scan");
            (Index::default(), false)
        }
    }
}

#[derive(Deserialize)]
struct IndexFile {
    format: u32,
    entries: Vec<Entry>,
}

/// What `save_index` writes: `IndexFile`, borrowing the entries.
#[derive(Serialize)]
struct IndexFileRef<'a> {
    format: u32,
    entries: Vec<&'a Entry>,
}

/// Read an index file. A missing file is an empty index.
pub fn read_index(path: &Path) -> Result<Index, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::default()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |reason: String| StateError::Corrupt {
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

/// Write `index` to `path` atomically: temp file, fsync, rename, then
/// fsync the folder so the rename itself survives a power loss.
pub fn save_index(index: &Index, path: &Path) -> Result<(), StateError> {
    let err = io_err(path);
    let file = IndexFileRef {
        format: INDEX_FORMAT,
        entries: index.iter().collect(),
    };
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        // Streamed: the JSON of a large index is never whole in memory.
        let f = std::fs::File::create(&tmp)?;
        let mut z = ZlibEncoder::new(std::io::BufWriter::new(f), Compression::fast());
        serde_json::to_writer(&mut z, &file).map_err(std::io::Error::other)?;
        let w = z.finish()?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(err)?;
    if let Some(dir) = path.parent() {
        // Not every filesystem lets a folder be opened for fsync; the
        // rename is atomic either way.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
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

    #[test]
    fn a_corrupt_index_is_moved_aside_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_FILE);
        let (idx, known) = load_index(&path);
        assert!(idx.is_empty() && !known, "a missing index: unknown history");
        std::fs::write(&path, b"not an index").unwrap();
        let (idx, known) = load_index(&path);
        assert!(idx.is_empty() && !known);
        assert_eq!(std::fs::read(path.with_extension("corrupt")).unwrap(), b"not an index");
        save_index(&Index::default(), &path).unwrap();
        assert!(load_index(&path).1, "a good index: known history");
    }

    #[test]
    fn save_and_load_round_trip_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        assert!(read_index(&path).unwrap().is_empty());
        let mut idx = Index::default();
        idx.insert(file("a/b", 7, b"x"));
        idx.insert(tomb("gone", 9));
        save_index(&idx, &path).unwrap();
        let back = read_index(&path).unwrap();
        assert_eq!(back.iter().cloned().collect::<Vec<_>>(), idx.iter().cloned().collect::<Vec<_>>());
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(read_index(&path), Err(StateError::Corrupt { .. })));
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
        let idx = read_index(&path).unwrap();
        let a = idx.get(&RelPath::new("a").unwrap()).unwrap();
        assert!(a.vector.is_empty());
        assert_eq!((a.size, a.version, a.by), (1, 7, NodeId(0)));
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
