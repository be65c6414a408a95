//! The conflict copies in DIR, for `dirsync conflicts`: found on the disk
//! alone (with or without a running node), and settled by the two things
//! a user would do by hand, each an ordinary change the watcher (or the
//! next start) picks up and every host then follows:
//!
//! - keep: the copy replaces the file it lost against (a rename);
//! - drop: the copy is deleted.
//!
//! Owns: finding copies and the two file operations. Must not: touch the
//! index or the network (the node sees the changes like any user's).

use crate::engine::conflict::parse_conflict_name;
use crate::wire::{RelPath, STATE_DIR_NAME};
use serde::Serialize;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One conflict copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictCopy {
    /// The copy, relative to DIR.
    pub path: String,
    /// The file it lost against (`None`: the copy's name was shortened to
    /// fit, so it cannot be told).
    pub original: Option<String>,
    /// The original is there now.
    pub original_exists: bool,
    /// When the losing version was written, UTC, as `2026-11-25T14:30:00Z`.
    pub written: String,
    /// The short id of the device (a DIR on some host) that wrote it.
    pub device: String,
    /// That device is this DIR's own.
    pub this_device: bool,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConflictError {
    #[error("{0}: not a conflict copy (a name with .sync-conflict-YYYYMMDD-HHMMSS-…)")]
    NotACopy(String),
    #[error("{0}: outside {1}, the synced directory; give a conflict copy inside it")]
    OutsideDir(String, String),
    #[error("{0}: the copy's name was shortened to fit 255 bytes, so the file it lost against is unknown; rename it by hand")]
    OriginalUnknown(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Every conflict copy under `root` (symlinks and dirsync's own state
/// left out), by path. `device`: this DIR's device id, if known.
pub fn list(root: &Path, device: Option<&str>) -> Vec<ConflictCopy> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let full = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                if dir != root || e.file_name() != STATE_DIR_NAME {
                    stack.push(full);
                }
                continue;
            }
            let Ok(rel) = RelPath::from_fs(root, &full) else { continue };
            if let Some(mut c) = describe(root, &rel) {
                c.this_device = device.is_some_and(|d| d.starts_with(&c.device));
                out.push(c);
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The copy `copy` (a path given by the user) under `root`, checked.
fn find(root: &Path, copy: &Path) -> Result<(PathBuf, ConflictCopy), ConflictError> {
    let shown = copy.display().to_string();
    let full = if copy.is_absolute() { copy.to_path_buf() } else { root.join(copy) };
    let full = full.canonicalize().map_err(|source| ConflictError::Io {
        path: shown.clone(),
        source,
    })?;
    if !full.starts_with(root) {
        return Err(ConflictError::OutsideDir(shown, root.display().to_string()));
    }
    let rel = RelPath::from_fs(root, &full).map_err(|_| ConflictError::NotACopy(shown.clone()))?;
    describe(root, &rel).map(|c| (full, c)).ok_or(ConflictError::NotACopy(shown))
}

/// The conflict copy at `rel`, if that is one (`this_device` left false).
fn describe(root: &Path, rel: &RelPath) -> Option<ConflictCopy> {
    let name = parse_conflict_name(rel.file_name())?;
    let meta = fs::symlink_metadata(rel.to_fs(root)).ok().filter(fs::Metadata::is_file)?;
    let original = name.original.and_then(|n| RelPath::child_of(rel.parent().as_ref(), &n).ok());
    Some(ConflictCopy {
        original_exists: original.as_ref().is_some_and(|o| o.to_fs(root).exists()),
        path: rel.as_str().to_string(),
        original: original.map(|o| o.as_str().to_string()),
        written: iso8601(&name.stamp),
        this_device: false,
        device: name.device,
        size: meta.len(),
    })
}

/// `20261125-143000` (digits checked by the parser) as `2026-11-25T14:30:00Z`.
fn iso8601(stamp: &str) -> String {
    let d = |r: std::ops::Range<usize>| stamp.get(r).unwrap_or("");
    format!("{}-{}-{}T{}:{}:{}Z", d(0..4), d(4..6), d(6..8), d(9..11), d(11..13), d(13..15))
}

/// Keep the copy: it replaces the file it lost against. Returns that
/// file's path, relative to `root`.
pub fn keep(root: &Path, copy: &Path) -> Result<String, ConflictError> {
    let (full, c) = find(root, copy)?;
    let original = c.original.ok_or_else(|| ConflictError::OriginalUnknown(c.path.clone()))?;
    let target = root.join(&original);
    fs::rename(&full, &target).map_err(|source| ConflictError::Io {
        path: original.clone(),
        source,
    })?;
    Ok(original)
}

/// Drop the copy: delete it.
pub fn drop_copy(root: &Path, copy: &Path) -> Result<String, ConflictError> {
    let (full, c) = find(root, copy)?;
    fs::remove_file(&full).map_err(|source| ConflictError::Io {
        path: c.path.clone(),
        source,
    })?;
    Ok(c.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COPY: &str = "docs/report.sync-conflict-20261125-143000-a1b2c3d4-5c2e6e6d.txt";

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("docs")).unwrap();
        fs::create_dir_all(dir.path().join(STATE_DIR_NAME)).unwrap();
        fs::write(dir.path().join("docs/report.txt"), b"winner").unwrap();
        fs::write(dir.path().join(COPY), b"loser!").unwrap();
        fs::write(dir.path().join("plain.txt"), b"x").unwrap();
        // dirsync's own state is never listed.
        fs::write(
            dir.path().join(STATE_DIR_NAME).join("a.sync-conflict-20261125-143000-a1b2c3d4.txt"),
            b"",
        )
        .unwrap();
        dir
    }

    #[test]
    fn copies_are_listed_with_their_original_time_and_device() {
        let dir = tree();
        let list = list(dir.path(), Some("a1b2c3d4e5f60718"));
        assert_eq!(
            list,
            vec![ConflictCopy {
                path: COPY.into(),
                original: Some("docs/report.txt".into()),
                original_exists: true,
                written: "2026-11-25T14:30:00Z".into(),
                device: "a1b2c3d4".into(),
                this_device: true,
                size: 6,
            }]
        );
        assert!(!super::list(dir.path(), Some("ffffffff00000000"))[0].this_device);
    }

    #[test]
    fn keeping_a_copy_replaces_its_original_and_dropping_deletes_it() {
        let dir = tree();
        assert_eq!(keep(dir.path(), Path::new(COPY)).unwrap(), "docs/report.txt");
        assert_eq!(fs::read(dir.path().join("docs/report.txt")).unwrap(), b"loser!");
        assert!(list(dir.path(), None).is_empty());

        let dir = tree();
        assert_eq!(drop_copy(dir.path(), &dir.path().join(COPY)).unwrap(), COPY);
        assert_eq!(fs::read(dir.path().join("docs/report.txt")).unwrap(), b"winner");
        assert!(!dir.path().join(COPY).exists());
    }

    #[test]
    fn only_conflict_copies_inside_dir_are_settled() {
        let dir = tree();
        let outside = tempfile::tempdir().unwrap();
        let stray = outside.path().join("x.sync-conflict-20261125-143000-a1b2c3d4.txt");
        fs::write(&stray, b"").unwrap();
        assert!(matches!(keep(dir.path(), Path::new("plain.txt")), Err(ConflictError::NotACopy(_))));
        // Issue 26, item 9: a path outside DIR is said to be outside it
        // (it was "not a conflict copy").
        for e in [keep(dir.path(), &stray).unwrap_err(), drop_copy(dir.path(), &stray).unwrap_err()] {
            assert!(matches!(e, ConflictError::OutsideDir(..)), "{e}");
            assert!(e.to_string().contains("outside"), "{e}");
        }
        assert!(stray.exists());
        assert!(matches!(drop_copy(dir.path(), Path::new("missing")), Err(ConflictError::Io { .. })));
    }
}
