//! A path that is a file on one node and a folder holding content on
//! another (a file replaced by a folder, or the reverse, while someone
//! wrote inside). Last-modified-wins cannot choose here without losing
//! data, so the rule is: a folder holding content the other side did not
//! see beats a file at its path, and the file is kept as a conflict copy.
//! A symlink stands where a folder would as a file does (it is no
//! folder), but gives way without a copy: it holds no content.
//! Every node applies it the same way:
//!
//! - holding such a folder, a node that hears of the file keeps the folder
//!   and announces it anew, ranked above the file (`keep_folder`);
//! - holding the file, a node that hears of content below it turns its
//!   file into a conflict copy and makes the folder (`file_gives_way`).
//!
//! Found by the random workload (issue 13): each side kept its own shape,
//! and every transfer failed with "File exists" or "Not a directory".

use super::conflict::conflict_entry;
use super::safety::deletes;
use super::{Action, Engine};
use crate::wire::{Entry, Hash, Kind, RelPath};
use std::collections::BTreeMap;
use tracing::info;

impl Engine {
    /// What a received file or link must find at `path` to replace it:
    /// our live version, or a deleted folder kept as the container of what
    /// it held (on disk until it is empty and removed; the store takes an
    /// empty one away, see `fs::Store::matches`).
    pub(super) fn replaced_here(&self, path: &RelPath) -> Option<Entry> {
        self.index.get(path).filter(|e| !e.deleted || e.kind == Kind::Dir)
    }

    /// Whether we hold live entries below `dir` that `deletions` (this
    /// batch's tombstones from the peer) do not delete: content the peer
    /// did not see. A tombstone that missed the edit of what it would
    /// delete does not count (the edit wins against it, see
    /// `safety::resurrection`; found by the workload, faults seed
    /// 7200021761).
    pub(super) fn holds_unseen_below(&self, dir: &RelPath, deletions: &BTreeMap<RelPath, Entry>) -> bool {
        self.index
            .under(Some(dir))
            .filter(|c| c.path != *dir && !c.deleted && !self.unsynced(&c.path, c.kind))
            .any(|c| {
                // A deletion of it heard earlier that failed to apply here
                // (a disk error) was seen all the same (found by the
                // workload's conflict-copy invariant, faults seed
                // 7200021603: the folder stayed, the file became a
                // conflict copy).
                deletions
                    .get(&c.path)
                    .or(self.failed_deletion(&c.path))
                    .is_none_or(|t| !deletes(t, &c))
            })
    }

    /// The peer's file `file` would replace our folder `dir`, which holds
    /// content it did not see: keep the folder, announced in a version
    /// ranked above the file (the file's holder keeps its file as a
    /// conflict copy when it takes this).
    pub(super) fn keep_folder(&mut self, dir: &Entry, file: &Entry) {
        info!(path = %dir.path, "a file replaced a folder elsewhere, but the folder holds content made meanwhile: the folder stays");
        let kept = self.folder_above(dir, file);
        self.record(kept, None);
    }

    /// A folder at `old`'s path, made here over `old` (with its mode, if
    /// it is a folder) and ranked above the peer's (or our) `file`.
    fn folder_above(&self, old: &Entry, file: &Entry) -> Entry {
        let at = file.version.saturating_add(1).max(self.clock);
        let folder = self.local_version(Some(old), old.path.clone(), Kind::Dir, false, 0, at, Hash::ZERO);
        // Found by the workload (faults seed 7200021606): a folder kept
        // this way lost its mode, which stayed on this disk alone; its
        // extended attributes too.
        match old.kind == Kind::Dir && !old.deleted {
            true => Entry {
                mode: old.mode,
                xattrs: old.xattrs.clone(),
                ..folder
            },
            false => folder,
        }
    }

    /// The live file or symlink at `path` or above it, if any.
    pub(super) fn file_above(&self, path: &RelPath) -> Option<Entry> {
        path.ancestors()
            .into_iter()
            .find_map(|a| self.index.live(&a).filter(|e| e.kind != Kind::Dir))
    }

    /// Our file `file` stands where a peer holds a folder with content:
    /// keep the file as a conflict copy, then make the folder, in a
    /// version ranked above the file.
    pub(super) fn file_gives_way(&mut self, file: Entry) {
        match file.kind {
            Kind::Symlink => info!(path = %file.path, "a folder with content replaced this symlink elsewhere: the folder takes its place"),
            _ => info!(path = %file.path, "a folder with content replaced this file elsewhere: the file is kept as a conflict copy"),
        }
        let folder = self.folder_above(&file, &file);
        let me = self.me;
        match conflict_entry(&file) {
            Some(copy) if self.index.get(&copy.path).is_none_or(|c| c.deleted) => {
                self.act(
                    me,
                    Action::ConflictCopy {
                        from: file,
                        copy,
                        then: folder,
                    },
                );
            }
            _ => self.act(
                me,
                Action::MakeDir {
                    entry: folder,
                    local: Some(file),
                },
            ),
        }
    }
}
