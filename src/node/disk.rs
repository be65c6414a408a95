//! The node's disk work outside of received files: applying the engine's
//! actions, looking at the disk again (rescans) and hashing large files
//! off the loop for it, persisting the index, keeping the state directory
//! there (made again when it is removed under the running node) and
//! reading the ignore and exclusion files.
//!
//! Owns: the paths to look at again and when the index was last saved.
//! Must not: decide what a result means (the engine does, from
//! `ActionError`).

use super::{Counters, Event, Node, NodeError};
use crate::engine::ignore::{EXCLUDE_FILE, IGNORE_FILE};
use crate::engine::index::OnDisk;
use crate::engine::Exclusion;
use crate::engine::{Action, ActionError, DirState, Extent, Known, Look, Scan};
use crate::fs::hashing::Hashed;
use crate::fs::scan::ScanResult;
use crate::fs::state::{load_ignore_rules, read_exclusion_rules, restore_state_dir, Kept, StateError};
use crate::fs::watcher::LocalEvent;
use crate::transport::net::Net;
use crate::wire::{NodeId, RelPath};
use tracing::{debug, error, info, warn};

impl<N: Net> Node<N> {
    /// Carry out `action` and tell the engine how it went.
    pub(super) fn apply(&mut self, peer: NodeId, action: Action) {
        let store = &self.store;
        // A copy is put in place like a received file: what it is seen as there.
        let mut installed = None;
        let result = match &action {
            Action::MakeDir { entry, local } => store.make_dir_over(entry, local.as_ref()),
            Action::MakeLink { entry, local } => store.make_link(entry, local.as_ref()),
            Action::Delete { local, .. } => store.delete(local),
            Action::SetMtime { entry, local } => store.set_mtime(entry, local),
            Action::Rename { from, entry, local, .. } => store.rename(from, entry, local.as_ref()),
            Action::Copy { from, entry, local } => store
                .copy(from, entry, local.as_ref())
                .map(|stat| installed = stat.map(|s| (entry.clone(), s))),
            Action::ConflictCopy { from, copy, .. } => store.copy(from, copy, None).map(|stat| installed = stat.map(|s| (copy.clone(), s))),
        }
        .map_err(ActionError::from);
        let counters = &self.cfg.counters;
        match &result {
            Ok(()) => {
                info!(path = %action.entry().path, action = action.name(), %peer, wire_bytes = 0, "applied");
                Counters::bump(&counters.actions_applied);
                if let Action::Rename { .. } = action {
                    Counters::bump(&counters.renames_applied);
                }
            }
            Err(_) => Counters::bump(&counters.failures),
        }
        self.engine.handle_action_done(peer, action, result);
        if let Some((copy, stat)) = installed {
            self.engine.handle_installed(&copy, stat);
        }
    }

    /// Remove `dirs`, innermost first, while they are empty.
    pub(super) fn remove_empty_dirs(&mut self, dirs: &[RelPath]) {
        match self.store.remove_empty_dirs(dirs) {
            Ok(removed) => {
                for dir in removed {
                    debug!(path = %dir, "removed an emptied folder whose deletion is recorded");
                }
            }
            Err((dir, e)) => self.engine.handle_dir_kept(dir, e.to_string()),
        }
    }

    /// Look at the disk again where `ev` says, and tell the engine.
    pub(super) fn rescan(&mut self, ev: LocalEvent) {
        let (roots, result) = match ev {
            LocalEvent::Changed(roots) if roots.iter().any(Option::is_none) => return self.rescan_tree(),
            LocalEvent::Changed(roots) => self.scan_roots(roots),
            LocalEvent::Renamed { from, to } => self.scan_rename(from, to),
        };
        let scan = Scan {
            roots,
            shallow: Vec::new(),
            dir: self.dir_state(result.root_failed),
            found: result.found,
            failed: result.failed,
            hashing: Vec::new(),
            extent: Extent::Paths,
        };
        self.look(scan, result.hashing);
    }

    /// Look at the whole tree, folder by folder, in parts of about
    /// `TREE_PART` paths: what a look holds in memory is bounded by a part,
    /// not by the tree.
    fn rescan_tree(&mut self) {
        const TREE_PART: usize = 10_000;
        let mut walk = self.store.walk_tree();
        let mut seen = 0;
        loop {
            let engine = &self.engine;
            let part = walk.next_part(&self.store, TREE_PART, &|p, is_dir| engine.look_up(p, is_dir));
            seen += part.found.len() as u64;
            let last = part.last || part.root_failed;
            let scan = Scan {
                roots: Vec::new(),
                shallow: part.folders,
                dir: self.dir_state(part.root_failed),
                found: part.found,
                failed: part.failed,
                hashing: Vec::new(),
                extent: Extent::TreePart { last },
            };
            self.look(scan, part.hashing);
            if last {
                break;
            }
        }
        self.large_scan |= seen >= super::LARGE_BATCH;
    }

    fn dir_state(&self, root_failed: bool) -> DirState {
        match self.store.dir_state() {
            DirState::Present if root_failed => DirState::Missing("cannot read it".into()),
            d => d,
        }
    }

    /// Tell the engine what a scan saw. `hashing`: large files it queued to
    /// be hashed, unknown until then (`fs::hashing`).
    fn look(&mut self, mut scan: Scan, hashing: Vec<RelPath>) {
        Counters::bump(&self.cfg.counters.looks);
        debug!(roots = scan.roots.len(), first = ?scan.roots.first(), found = scan.found.len(), "looked");
        // What it could not read (a file still being written, an unreadable
        // one) keeps its old entry; the engine asks for another look at it,
        // with backoff (`Command::Rescan`).
        scan.hashing = hashing;
        self.engine.handle_scan(self.now_ns(), scan);
        let hashed = self.store.files_hashed();
        self.cfg.counters.files_hashed.store(hashed, std::sync::atomic::Ordering::Relaxed);
        self.hash_next();
    }

    /// Hash the next queued large file on a blocking thread, unless one is
    /// under way.
    fn hash_next(&mut self) {
        if self.hashing {
            return;
        }
        let Some(job) = self.store.next_hash_job() else { return };
        debug!(path = %job.path, "hashing a large file off the loop");
        self.hashing = true;
        let (net, events) = (self.net.clone(), self.events.clone());
        self.net.spawn(async move {
            let hashed = net.spawn_blocking(move || job.run()).await;
            let _ = events.send(Event::Hashed(hashed)).await;
        });
    }

    /// A large file was hashed: look at it again, now that the look finds
    /// its hash. One that changed meanwhile was queued again by the
    /// watcher's event; one that cannot be read waits for the next rescan.
    pub(super) fn on_hashed(&mut self, hashed: Hashed) {
        self.hashing = false;
        let path = hashed.path.clone();
        match self.store.finish_hash(hashed) {
            Ok(()) => {
                debug!(%path, "hashed a large file");
                self.rescan(LocalEvent::Changed(vec![Some(path)]))
            }
            Err(e) => debug!(%path, error = %e, "not hashed"),
        }
        self.hash_next();
    }

    /// Scan each of `roots`.
    fn scan_roots(&self, mut roots: Vec<Option<RelPath>>) -> (Vec<Option<RelPath>>, ScanResult) {
        roots.sort();
        roots.dedup();
        let engine = &self.engine;
        let mut all = ScanResult::default();
        for root in &roots {
            let r = self.store.scan_checked(root.as_ref(), &|p, is_dir| engine.look_up(p, is_dir));
            all.found.extend(r.found);
            all.failed.extend(r.failed);
            all.hashing.extend(r.hashing);
            all.root_failed |= r.root_failed;
        }
        (roots, all)
    }

    /// Scan both ends of a rename. A renamed file keeps its size and mtime:
    /// the hash the index has under its old name is reused, not read again.
    fn scan_rename(&self, from: RelPath, to: RelPath) -> (Vec<Option<RelPath>>, ScanResult) {
        let engine = &self.engine;
        // A rename changes the file's change time: what it held under its
        // old name is compared by size and mtime only.
        let renamed = |p: &RelPath| -> Option<Known> {
            let suffix = p.as_str().strip_prefix(to.as_str())?;
            let old = engine.index().get(&RelPath::new(format!("{}{suffix}", from.as_str())).ok()?)?;
            Some((old, None))
        };
        let known = |p: &RelPath, is_dir: bool| match engine.look_up(p, is_dir) {
            Look::At(None) => Look::At(renamed(p)),
            look => look,
        };
        let mut r = self.store.scan_checked(Some(&to), &known);
        let r2 = self.store.scan_checked(Some(&from), &|p, is_dir| engine.look_up(p, is_dir));
        r.found.extend(r2.found);
        r.failed.extend(r2.failed);
        r.hashing.extend(r2.hashing);
        r.root_failed = false;
        (vec![Some(from), Some(to)], r)
    }

    /// Commit the index's changes, in one transaction. A commit that fails
    /// stops the node: one that goes on without saving would find, at its
    /// next start, an index that misses everything since.
    pub(super) fn save_index(&mut self) {
        if let Err(e) = self.engine.index_mut().commit() {
            self.cannot_save(e.to_string());
        }
    }

    /// Commit and close the index, at a clean shutdown. An index whose
    /// file was deleted with the state directory (DIR's marker, which the
    /// node does not make again) is not saved: said, and the exit is not 0.
    pub(super) fn close_index(&mut self) {
        if let Err(e) = self.engine.index_mut().close() {
            return self.cannot_save(e.to_string());
        }
        if let Ok(OnDisk::Unlinked) = self.engine.index().on_disk() {
            let dir = self.cfg.state_dir.display();
            self.cannot_save(format!(
                "its file was deleted with the state directory {dir}, DIR's marker folder, which was not made again; the next start rebuilds the index from a scan"
            ));
        }
    }

    fn cannot_save(&mut self, reason: String) {
        error!(%reason, "cannot save the index: stopping");
        self.engine.note_error(format!("cannot save the index: {reason}"));
        self.stop.get_or_insert(NodeError::Save(reason));
    }

    /// Keep the state directory where it belongs. When it was removed (or
    /// moved) under the running node, which its index file no longer being
    /// at its path shows, it is made again with what the node keeps there
    /// (`fs::state::restore_state_dir`): the index, written whole to a new
    /// file, the device id and the exclusion rules; the control socket
    /// follows within a second (`app::control`). Not when the state
    /// directory is DIR's marker (the default): its removal suspends
    /// syncing (the mass-delete guard) and making it again would defeat
    /// the guard. The index is written there once the marker is back
    /// (`mkdir DIR/.dirsync`, which resumes syncing). A state directory
    /// that cannot be made again stops the node.
    pub(super) fn keep_state_dir(&mut self) {
        let on_disk = match self.engine.index().on_disk() {
            Ok(OnDisk::InPlace | OnDisk::Memory) => {
                self.state_gone_noted = false;
                return;
            }
            Ok(d) => d,
            Err(e) => {
                // The path cannot be looked at: the file stays linked, and
                // commits go on reaching it.
                debug!(error = %e, "cannot tell whether the index file is in place");
                return;
            }
        };
        let dir = self.cfg.state_dir.clone();
        if dir == self.store.marker() && !dir.is_dir() {
            if !self.state_gone_noted {
                self.state_gone_noted = true;
                let saved = match on_disk {
                    OnDisk::Unlinked => "the index is not saved until it is back",
                    _ => "the index is saved where the folder went until it is back",
                };
                warn!(path = %dir.display(), "the state directory, DIR's marker folder, was removed: not syncing (mkdir it to resume); {saved}");
                self.engine
                    .note_error(format!("the state directory {} was removed: {saved}", dir.display()));
                // The guard sees it now, not at the next periodic rescan.
                if self.engine.suspended().is_none() {
                    self.rescan(LocalEvent::Changed(vec![None]));
                }
            }
            return;
        }
        let kept = Kept {
            device: self.store.device(),
            exclusion: &self.exclusion_text,
        };
        match restore_state_dir(&dir, self.engine.index_mut(), &kept) {
            Ok(()) => {
                self.state_gone_noted = false;
                warn!(path = %dir.display(), "the state directory was removed under the running node: made again, with the index, the device id and the exclusion rules");
                Counters::bump(&self.cfg.counters.state_restored);
            }
            Err(e) => self.cannot_save(format!(
                "the state directory {} was removed and cannot be made again: {e}",
                dir.display()
            )),
        }
    }

    /// Read `.dirsyncignore` from disk and give the engine its rules.
    pub(super) fn load_ignore(&mut self) {
        let (rules, errors) = load_ignore_rules(&self.cfg.dir);
        for e in errors {
            warn!(error = %e, "ignore rules");
        }
        if rules.source().is_some() {
            info!(patterns = rules.len(), "ignore rules loaded from {IGNORE_FILE}");
        }
        self.engine.set_ignore(rules);
    }

    /// Read this host's exclusion rules (`STATE_DIR/exclude`) and give
    /// them to the engine, at the start: rules that cannot be used stop
    /// the node with the reason, before anything is synced under them.
    pub(super) fn load_exclusion(&mut self) -> Result<(), StateError> {
        let text = read_exclusion_rules(&self.cfg.state_dir)?;
        let path = self.cfg.state_dir.join(EXCLUDE_FILE).display().to_string();
        let (exclusion, errors) = Exclusion::parse(&text).map_err(|reason| StateError::Exclusion {
            path: path.clone(),
            reason,
        })?;
        self.use_exclusion(exclusion, errors, text);
        Ok(())
    }

    /// Look whether the exclusion rules changed (once a second: one small
    /// read). Rules that cannot be used are reported, and the ones in use
    /// stay.
    pub(super) fn check_exclusion(&mut self) {
        let text = match read_exclusion_rules(&self.cfg.state_dir) {
            Ok(text) if text == self.exclusion_text => return,
            Ok(text) => text,
            Err(e) => {
                if self.engine.last_error() != Some(e.to_string().as_str()) {
                    warn!(error = %e, "cannot read the exclusion rules: the ones in use stay");
                    self.engine.note_error(e.to_string());
                }
                return;
            }
        };
        match Exclusion::parse(&text) {
            Ok((exclusion, errors)) => {
                if self.use_exclusion(exclusion, errors, text) {
                    // Paths excluded until now are found and announced.
                    self.rescan(LocalEvent::Changed(vec![None]));
                }
            }
            Err(reason) => {
                warn!(%reason, "exclusion rules not used: the ones in use stay");
                self.engine.note_error(format!("{EXCLUDE_FILE}: {reason}"));
                self.exclusion_text = text;
            }
        }
    }

    /// True if what is synced here changed.
    fn use_exclusion(&mut self, exclusion: Exclusion, errors: Vec<String>, text: Vec<u8>) -> bool {
        for e in errors {
            warn!(error = %e, "exclusion rules");
        }
        if !exclusion.is_empty() {
            info!(
                patterns = exclusion.len(),
                "exclusion rules loaded from {EXCLUDE_FILE}: the paths they name are not synced here"
            );
        }
        self.exclusion_text = text;
        self.engine.set_exclusion(exclusion)
    }
}
