//! The state directory's files other than the index format itself: the
//! directory's persistent device id, and loading the index with its
//! recovery (a corrupt index is moved aside and rebuilt from a scan).
//!
//! Owns: `<state dir>/device` and the choice between a loaded index and an
//! unknown history. Must not: decide anything about sync.

use crate::index::Index;
use crate::node::NodeError;
use crate::wire::NodeId;
use std::path::Path;
use tracing::warn;

/// The directory's persistent device id (for version vectors).
pub const DEVICE_FILE: &str = "device";

/// The synced directory's device id: read from `state_dir/device`, or, on
/// the first start (or if that file is unreadable), `fresh` written there.
/// Unlike the node id, which is new on every start, it stays with the
/// directory's state, so the counters of version vectors stay its own.
pub fn load_device_id(state_dir: &Path, fresh: NodeId) -> Result<NodeId, NodeError> {
    let path = state_dir.join(DEVICE_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        match u64::from_str_radix(text.trim(), 16) {
            Ok(id) if text.trim().len() == 16 && id != 0 => return Ok(NodeId(id)),
            _ => warn!(path = %path.display(), "the device id file is unreadable; making a new device id"),
        }
    }
    let err = |source| NodeError::StateDir {
        path: path.display().to_string(),
        source,
    };
    let id = if fresh.0 == 0 { NodeId(1) } else { fresh };
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(id)
}

/// The index in `path`, and whether its history is known: a missing index
/// (first start) or an unreadable one (moved aside to `index.corrupt`) is
/// rebuilt from the first scan, with a warning for the unreadable one.
pub fn load_index(path: &Path) -> (Index, bool) {
    if !path.exists() {
        return (Index::default(), false);
    }
    match Index::load(path) {
        Ok(i) => (i, true),
        Err(e) => {
            let aside = path.with_extension("corrupt");
            let _ = std::fs::rename(path, &aside);
            warn!(error = %e, kept_as = %aside.display(), "rebuilding the index from a scan");
            (Index::default(), false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX_FILE: &str = "index";

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
        Index::default().save(&path).unwrap();
        assert!(load_index(&path).1, "a good index: known history");
    }
}
